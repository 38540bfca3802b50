"""The paper's analyses as pure functions: tensors and frames in, frames out; no I/O, no store, no fault hooks.

- :mod:`.probes`      language-identification probes per layer (scikit-learn logistic regression)
- :mod:`.experts`     every unit's average precision per (concept, language), top-K experts (Suau et al.)
- :mod:`.alignment`   how expert sets align across languages; units shared by many languages
- :mod:`.similarity`  compression / convergence of representations across languages
- :mod:`.lape`        language-specific neurons by activation-probability entropy (Tang et al.)
"""
