"""The commands: training (`train_nlg`, `finetune_glue`, `finetune_bert_l_sst2`, `quickstart`), evaluation
(`eval_gsm8k`, `eval_gsm8k_nll`, `eval_math`, `eval_humaneval`, `eval_mbpp`, `eval_mt_bench`), tables
(`aggregate`) and figures (`plot`, `tsne`).

Each module has `main(argv) -> result` (callable from Python and tests) and `cli() -> exit status` (the
console entry point and the `__main__` of the repository's same-named shim scripts). The training
commands share one run lifecycle (`balora.cli.lifecycle`); the others answer user errors through
`balora.cli.command`. This layer may import the whole package; nothing imports it.
"""
