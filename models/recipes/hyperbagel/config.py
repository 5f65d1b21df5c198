"""Model configurations. DEFAULT is the shipped model, TINY the random-weight test fixture."""
from dataclasses import dataclass, asdict, field


@dataclass
class ModelConfig:
    # decoder (Qwen2-style MoT)
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    head_dim: int = 32
    ffn: int = 384
    max_positions: int = 256
    rope_theta: float = 10000.0
    rms_eps: float = 1e-6
    vocab: int = 0  # filled from the tokenizer
    # vision encoder (conv stem + small ViT + connector)
    vit_image_size: int = 64
    vit_stem: tuple = (32, 64, 96, 128)  # channels of 4 stride-2 convs: 64 -> 4x4 = 16 tokens
    vit_width: int = 128
    vit_layers: int = 1
    vit_heads: int = 4
    # what the conv stem sees: "rgb" (pixels; releases 1-5), "mask" (a colour-free foreground
    # mask only) or "rgb+mask" (release 6 onwards); with vit_colour the tokens also get a shape-free colour feature
    # (VisionEncoder.foreground / colour_features), for colour x shape generalisation (docs/results.md).
    vit_input: str = "rgb"
    vit_colour: bool = False
    # VAE
    gen_image_size: int = 32
    vae_channels: tuple = (32, 64, 64)  # 32 -> 16 -> 8
    latent_channels: int = 4
    latent_patch: int = 2
    latent_scale: float = 1.0

    @property
    def vit_grid(self):
        return self.vit_image_size // (2 ** len(self.vit_stem))

    @property
    def latent_size(self):
        return self.gen_image_size // (2 ** (len(self.vae_channels) - 1))

    @property
    def latent_grid(self):
        return self.latent_size // self.latent_patch

    @property
    def latent_token_dim(self):
        return self.latent_channels * self.latent_patch * self.latent_patch

    def to_dict(self):
        d = asdict(self)
        d["vit_stem"] = list(self.vit_stem)
        d["vae_channels"] = list(self.vae_channels)
        return d

    @staticmethod
    def from_dict(d):
        d = dict(d)
        d["vit_stem"] = tuple(d["vit_stem"])
        d["vae_channels"] = tuple(d["vae_channels"])
        return ModelConfig(**d)


DEFAULT = ModelConfig()

TINY = ModelConfig(hidden=32, layers=2, heads=2, head_dim=16, ffn=64, vit_stem=(8, 8, 16, 16), vit_width=16,
                   vit_layers=1, vit_heads=2, vae_channels=(8, 8, 8))
