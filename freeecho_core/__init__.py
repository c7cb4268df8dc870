"""Free-Echo: training-free, segmentation-conditioned echocardiogram video synthesis (Nguyen et al., MICCAI).

The method and the product sit at the top: `edm` (paper eqs. (1), (4)), `sampler` (eq. (2), SDEdit, guidance and
`SamplerConfig`), `unet3d` (the network F), `pseudo` (eq. (3)), `motion`, `synthesis` (the `FreeEcho` API),
`generate`, `train`, `checkpoint` (weights-only checkpoints, `load_model`) and `cli` (the `freeecho` command);
`data` holds the datasets and the phantom, `study` the paper's study and `bench`
the benchmarks (of the modules above, only `cli` imports these two).
"""
__version__ = "0.1.0"
