"""camcore: GAP classifiers, class activation maps in the forward pass, CAM boxes, concept maps.

Pure PyTorch (torch, torchvision, numpy, PIL, scipy; pycocotools for metrics). Modules:

- ``camcore.images``: ``load_image`` (robust to real files), ``ImageLoadError``
- ``camcore.models``: ``ModelSpec``, ``GapClassifier``, ``build_model``, checkpoints, ImageNet
- ``camcore.transforms``: ``preprocess`` / ``resize_into`` (uint8 batches), ``Normalizer``
- ``camcore.prepare``: ``prepare_for_inference`` (BN folded, in-place activations; same function)
- ``camcore.cam``: CAM in the same forward pass as the logits
- ``camcore.separability``: whether the classifier tells the tags apart on held-out images
- ``camcore.objectness``: per-class DDT objectness fused with the CAM (the default map method)
- ``camcore.boxes``: the box rule (``BoxParams``, rules, corrections, box score, ``boxes_from_maps``)
- ``camcore.streaming`` / ``camcore.forward_choice``: files decoded ahead; the forward variant
- ``camcore.localizer``: ``Localizer`` (images or files in, ``ImageResult`` out)
- ``camcore.calibration``: per-class rules and box corrections from reviewed boxes
- ``camcore.concept_maps``: float16 map storage and Turbo heatmap PNGs
- ``camcore.training``: ``train_head`` (linear probe / fine-tune, multi-label)
- ``camcore.metrics``: CorLoc, MaxBoxAccV2, COCO AP

See ``camcore/README.md``.
"""
