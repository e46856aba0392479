"""Reproducing the paper on top of the algorithm in `balora`: data, tasks, models, configs, results.

data, prompts    NLG training data and the Alpaca prompt (response-only labels)
glue, features   GLUE tasks (loading, metrics, bias-probe perturbations) and feature dumps for t-SNE
models           embedded offline models (tiny random ones, SmolLM2, MiniLM) and weight fingerprints
rehearsal        the map from paper models and hub datasets to their CPU stand-ins
config           YAML + command-line parsing of the entry scripts
provenance       run metadata (git commit, package versions, seed, wall time, peak memory)
results, paired  tables over seeds with the paper's numbers beside them; paired per-item statistics
plots            the figures
"""
