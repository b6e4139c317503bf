"""Pure PyTorch/numpy ML core of HARweb (no Django imports in this package).

Modules: ``devclip`` (random-weight dev checkpoints), ``clip`` (offline-first
model loading), ``encoders`` (parity-checked fast image encoders, text
encoding), ``zeroshot`` (prompt ensembles, scoring, proposals) and
``segments`` (clip proposals -> time segments).
"""
