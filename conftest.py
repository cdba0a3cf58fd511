"""pytest set-up shared by the unit tests and the nbval notebook runs."""
import os

import matplotlib

# Quick mode for every notebook kernel nbval starts (kernels inherit this environment);
# run `DDPM_QUICK=0 pytest notebooks` to re-execute the notebooks in full.
os.environ.setdefault("DDPM_QUICK", "1")
matplotlib.use("Agg")  # unit tests only: notebook kernels keep their inline backend
