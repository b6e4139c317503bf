"""Pure PyTorch/numpy ML core of HARweb: nothing in this package imports Django.

The CLIP core: ``devclip`` (random-weight dev checkpoints with the real
tokenizer), ``clip`` (offline-first model loading), ``encoders`` (parity-checked
fast image encoders, text encoding), ``zeroshot`` (prompt ensembles, scoring,
proposals) and ``segments`` (clip proposals -> time segments).
"""
