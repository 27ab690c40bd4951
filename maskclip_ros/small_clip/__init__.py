"""The project's own small CLIP on its generated world (`maskclip-ros train-clip`, `maskclip-ros eval-clip`).

No pretrained CLIP exists here, so a tiny open_clip model (assets/clip_configs/) is trained contrastively
(open_clip's ClipLoss) on region crops and whole scenes of the generated world with their descriptions; this
plays the part of CLIP's web-scale pretraining.

Scale: the node sees objects in full 640x480 frames, and a small ViT loses shape when objects appear at
another scale. So the model's native input is the whole frame (image_size 480x640, a 30x40 patch grid) and
training crops are cut from full-resolution scenes *without rescaling*: each crop is a window of the frame's
patch grid, and its patches get the positional embeddings of exactly those grid cells. A batch of windows
of different sizes is padded to ``max_window`` patches per side; padding patches are masked out of the
attention (additive -inf key mask), so every crop is encoded as if it were alone. Stuff is also shown as
whole regions (its bbox window at any size, with only the patches the region covers by half kept: a
region-shaped patch dropout), because a model that only saw small windows called every large region a
thing. Whole scenes use the plain open_clip forward, exactly as the node runs the model.

Batches are balanced: one sample per label (colour x shape for things, the class for stuff) per batch, so
no duplicate caption acts as a false negative.

Modules: ``config`` (settings from config/small_clip.yaml), ``windows`` (native-scale windows of the frame
and their encoding), ``samples`` (the scene pool, balanced batches, captions), ``train`` (the training
loop), ``evaluate`` (zero-shot region classification on held-out scenes).
"""
