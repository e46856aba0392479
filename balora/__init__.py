"""BA-LoRA: Bias-Alleviating Low-Rank Adaptation (arXiv 2408.04556, ICLR 2026).

Modules:
    regularizers  pure tensor functions for the three logit regularisers (docs/method.md §3)
    adapters      adapter set-up on top of peft and the frozen reference function (§1-§2)
    trainer       a transformers Trainer that adds the regularisers and logs each term
    data          prompt formatting and tokenisation for the NLG recipe
    models        offline embedded models (tiny random models, SmolLM2, MiniLM)
    provenance    run metadata (git commit, package versions, wall time, peak memory)
"""

__version__ = "0.1.0"
