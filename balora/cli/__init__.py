"""The training commands: `train_nlg`, `finetune_glue`, `finetune_bert_l_sst2`, `quickstart`.

Each module has `main(argv) -> metrics` (callable from Python and tests) and `cli() -> exit status` (the
console entry point and the `__main__` of the repository's same-named shim scripts). They share one run
lifecycle (`balora.cli.lifecycle`). This layer may import the whole package; no other module of the
package imports it.
"""
