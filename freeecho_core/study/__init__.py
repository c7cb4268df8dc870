"""The paper's study and our additions to it, kept apart from the method: the cached videos of every method
(`videos`), their scores (`scoring`: SSIM/PSNR and their terms, the Frechet metrics of `metrics`, the anatomy
metrics and map specificity of `anatomy` read by the judge segmenter of `segmenter`), Table 1 and the paper's
claims (`tables`), the t_i and network-evaluation budget study (`nfe`), the EF-control study (`ef`) and the model
cards that record a model's held-out scores (`model_card`). Nothing in the method imports from here (only the `freeecho` command does).
"""
