"""Demo and benchmark material, apart from the runtime: scikit-learn's digits data split per site
(data), the demo's initial models per framework (digits_models) and the same training with bare
Flower and no repository, the baseline of `make bench-fl` (bare)."""
