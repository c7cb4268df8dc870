"""Free-Echo: training-free, segmentation-conditioned echocardiogram video synthesis (Nguyen et al., MICCAI).

Modules: `edm` (paper eqs. (1), (4)), `sampler` (eq. (2), SDEdit, guidance), `unet3d` (the network F),
`checkpoint` (weights-only checkpoints), `cli` (the `freeecho` command).
"""
__version__ = "0.1.0"
