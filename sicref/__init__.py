"""sicref: reference implementation of SIC (Separation, Invariance, Capacity).

Schaeffer, Khona et al., NeurIPS 2023 (arXiv:2311.02316). Read the modules beside
SPEC.md: data (SPEC §2), model (§3), losses and fastloss (§4), optim (§5), config
(§6, §9), train and checkpoint, gridness, lattice and modules (§7.2-§7.6), evaluate
(§7), interchange and crosscheck (§8), plots, run (the main job), sweep, cli.
"""

__version__ = "0.1.0"
