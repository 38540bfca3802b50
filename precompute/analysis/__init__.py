"""The paper's analyses as pure functions: tensors and frames in, frames out; no I/O, no store, no fault hooks.

- :mod:`.units`       the unit axis: hooked MLP layers' units side by side, (layer, unit) <-> column
- :mod:`.probes`      language-identification probes per layer (scikit-learn logistic regression)
- :mod:`.experts`     every unit's average precision per (concept, language), top-K experts (Suau et al.)
- :mod:`.alignment`   how expert sets align across languages; units shared by many languages
- :mod:`.similarity`  compression / convergence of representations across languages
- :mod:`.lape`        language-specific neurons by activation-probability entropy (Tang et al.)
- :mod:`.chance`      chance levels, permutation tests and bootstrap intervals of every headline number
- :mod:`.drilldown`   what fires one unit, how it responds, what it writes

Conventions, the same in every module:

- **Docstrings** are numpydoc (``Parameters`` / ``Returns``). An array's shape is written with named axes, e.g.
  ``(contexts, units)``, ``(layers, contexts, hidden)``, ``(concepts,)``: ``contexts`` are one checkpoint's
  sentences (of one language where a function works per language), ``units`` the columns of the unit axis
  (`units.UnitAxis`: every hooked MLP layer's units concatenated), ``concepts`` and ``languages`` the run's
  (sorted), ``layers`` hooked MLP layers or residual-stream layers as the entry says, ``hidden`` the residual
  width, ``vocab`` the LM head's rows, ``seeds`` the probe seeds.
- **Units in frames** are named (``layer``, ``unit``): ``layer`` the model's block index and ``unit`` the index
  inside that block's MLP, converted from columns by `units.UnitAxis` only.
- **Settings** the run config sets (``precompute.config``) are keyword-only parameters without defaults: the
  config is the one owner of a run's defaults. Defaults that remain are mathematical or operational (chunk
  sizes that change no result) and are not settings of a run.
"""
