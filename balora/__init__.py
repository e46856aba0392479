"""BA-LoRA: Bias-Alleviating Low-Rank Adaptation (arXiv 2408.04556, ICLR 2026).

The algorithm, what a user imports into their own training loop:
    regularizers  consistency_loss, diversity_loss, svd_loss and the combined regularizer_terms, with
                  their equations (docs/method.md §3); presets of the paper's versions
    _kernels      the fused, chunked autograd functions those terms use (private)
    adapters      prepare_model (PiSSA and the other methods on peft) and reference_mode, the frozen
                  pre-trained function as one extra adapter (docs/method.md §1-§2); bottleneck: the
                  Houlsby / Pfeiffer adapters of the NLU table; recipes: the named methods (ba-lora = PiSSA
                  + the regularisers), importable without torch
    trainer       BALoRATrainingArguments (the new knobs) and BALoRATrainer (the terms, logged per term)

Beside it, depending on it and never the reverse (tests/test_layout.py):
    balora.repro  reproducing the paper: NLG data and prompts, GLUE tasks, the embedded and stand-in
                  models, config files, provenance, result tables, paired statistics, plots, features
    balora.eval   evaluating: generation, the graders (GSM8K, MATH, code, MT-Bench), the code sandbox
                  (uses balora.repro for models, prompts and provenance)
"""

__version__ = "0.1.0"
