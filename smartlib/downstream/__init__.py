"""Downstream evaluation of pretrained encoders (the studies of SMART, arXiv 2310.01209).

* :mod:`.classify` — nodule malignancy / treatment response: linear probe and fine-tuning, limited labels,
  AUC / accuracy / balanced accuracy with bootstrap CIs;
* :mod:`.segment` — SwinUNETR initialised strictly from an export, Dice / HD95 with sliding-window inference;
* :mod:`.clusters` — organ clustering of frozen features with UMAP;
* :mod:`.attention` — [CLS] attention maps, localisation scores, attention-distance entropy per head;
* :mod:`.multilabel`, :mod:`.label_tokens` — multi-label findings: per-label AUROC, label tokens (LT-ViT) vs [CLS],
  label-token maps vs Grad-CAM;
* :mod:`.study` — the skeleton every study follows (inits × fractions × seeds → rows → files);
* :mod:`.metrics`, :mod:`.features`, :mod:`.data`, :mod:`.results` — shared pieces (figures: :mod:`smartlib.plots.downstream`).

Modules are imported lazily by their users (``from smartlib.downstream import classify``).
"""
