"""Evaluating adapters: generation, the graders (GSM8K, MATH, HumanEval/MBPP, MT-Bench), the code sandbox,
samples files and the flow shared by the eval/ command lines."""
