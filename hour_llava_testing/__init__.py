"""Tiny, offline stand-ins for tests, smoke runs and benchmarks: a random Hour-LLaVA with the paper's token geometry
and tiny widths (`tiny_model`), its byte-level tokenizer (`tiny_tokenizer`), and local copies of the evaluation
benchmarks with their real column schemas (`tiny_benchmarks`). Nothing in the product imports this package except
`train.py --tiny`.
"""
