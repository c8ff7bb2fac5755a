"""sicref: reference implementation of SIC (Separation, Invariance, Capacity).

Schaeffer, Khona et al., NeurIPS 2023 (arXiv:2311.02316). Read the modules beside
SPEC.md: data (SPEC §2), model (§3), losses (§4), optim (§5), config (§6, §9),
train, gridness (§7), evaluate (§7), interchange (§8), plots, cli.
"""

__version__ = "0.1.0"
