"""Trains the shapes prior: python -m l2vsd_ext.shapes.train --out DIR

Renders the data set (cached in DIR/dataset.npz, no pickle), trains the VAE, then the UNet together
with the small text encoder (text dropout for classifier-free guidance), and writes the diffusers
folder DIR/pipeline. With --pixel-space there is no VAE: the UNet denoises the images themselves.
With --init-from PIPELINE the UNet phase starts from that prior's weights (a fine-tune; no VAE
phase). Deterministic for a seed; an atomic checkpoint (DIR/checkpoint.pt) is written every
--ckpt-every steps, and rerunning the same command resumes from it."""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

from ..checkpoint import atomic_write_bytes, load_checkpoint
from .augment import generic_images, random_backgrounds
from .dataset import load_or_build_dataset
from .models import (PriorSizes, build_scheduler, build_text_encoder, build_tokenizer, build_unet,
                     build_vae, save_pipeline)


class TrainError(ValueError):
    """A bad setting: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m l2vsd_ext.shapes.train",
                                description="Train the shapes prior (resumes from DIR/checkpoint.pt).")
    p.add_argument("--out", required=True, help="working folder: data set, checkpoint, pipeline/")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--views-per-object", type=int, default=384)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--vae-channels", type=int, nargs="+", default=[32, 64, 64])
    p.add_argument("--unet-channels", type=int, nargs="+", default=[64, 128])
    p.add_argument("--unet-layers", type=int, default=1, help="resnet layers per UNet block")
    p.add_argument("--text-width", type=int, default=64)
    p.add_argument("--pixel-space", action="store_true",
                   help="no VAE (Imagen/DeepFloyd-IF style): the UNet works on the 3-channel image in "
                        "[-1, 1]; --vae-steps must then be 0 (its default)")
    p.add_argument("--balance-views", action="store_true",
                   help="draw UNet images so that every (object, view label) text is equally frequent "
                        "(front and back views are each about 1/6 of the run's cameras)")
    p.add_argument("--prediction-type", choices=("epsilon", "v_prediction"), default="epsilon",
                   help="the UNet's target: the noise (version 2's), or v = √ᾱ ε − √(1−ᾱ) x0, whose "
                        "x0 estimate stays well-conditioned at high noise (pixel space samples need that)")
    p.add_argument("--init-from", default=None, metavar="PIPELINE",
                   help="fine-tune: start the UNet phase from this prior folder's VAE, UNet and text "
                        "encoder (written by this script with the same sizes), or a shipped one by name "
                        "('shapes', 'shapes-v2'); no VAE phase")
    p.add_argument("--vae-steps", type=int, default=None,
                   help="default 800, or 0 with --pixel-space or --init-from")
    p.add_argument("--unet-steps", type=int, default=2400)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--unet-lr", type=float, default=5e-4)
    p.add_argument("--kl-weight", type=float, default=1e-4)
    p.add_argument("--text-dropout", type=float, default=0.1)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--white-background", type=float, default=0.5,
                   help="probability that a training render keeps its white background (else a "
                        "random solid colour, as the run's background augmentation draws)")
    p.add_argument("--generic-fraction", type=float, default=0.5,
                   help="fraction of each VAE batch that is generic images (colour fields, ellipses)")
    p.add_argument("--ckpt-every", type=int, default=100)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: on a shared, busy CPU more threads are far slower)")
    return p


def _save(state: dict, path: str) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _lr_factor(step: int, total: int, warmup: int = 100) -> float:
    """Linear warm-up, then cosine decay to 10%."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _flip(images: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    # The objects are mirror-symmetric in y and a mirrored camera keeps its view label, so a
    # horizontal flip is an exact augmentation.
    return torch.where(flips.view(-1, 1, 1, 1), images.flip(-1), images)


def object_batch(images, alphas, idx, flips, white_probability, generator) -> torch.Tensor:
    """Renders idx in [0, 1], mirrored where flips, over white or a random colour."""
    rgb = _flip(images[idx].float() / 255, flips)
    alpha = _flip(alphas[idx].float() / 255, flips)
    return random_backgrounds(rgb, alpha, white_probability, generator)


def vae_batch(images, alphas, args, generator) -> torch.Tensor:
    """One VAE batch: object renders over random backgrounds plus generic images."""
    n_generic = int(round(args.batch_size * args.generic_fraction))
    n_objects = args.batch_size - n_generic
    idx = torch.randint(images.shape[0], (n_objects,), generator=generator)
    flips = torch.rand(n_objects, generator=generator) < 0.5
    parts = [object_batch(images, alphas, idx, flips, args.white_background, generator)]
    if n_generic:
        parts.append(generic_images(n_generic, images.shape[-1], generator))
    return torch.cat(parts)


def balanced_draw_weights(text_index: torch.Tensor, n_texts: int) -> torch.Tensor:
    """Per-image draw weights 1 / (images sharing its text): every (object, view) text is then
    drawn equally often, whatever share of the run's cameras its view label gets."""
    counts = torch.bincount(text_index, minlength=n_texts).double()
    return 1.0 / counts[text_index]


@torch.no_grad()
def latent_scale(vae, images, alphas, white_probability: float, seed: int, n: int = 1024) -> float:
    """1 / std of the posterior means of n training renders (unit-variance latents, as SD's
    0.18215), drawn with their own generator so the value does not depend on when it is taken."""
    generator = torch.Generator().manual_seed(seed + 2)
    idx = torch.randint(images.shape[0], (n,), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    x = object_batch(images, alphas, idx, flips, white_probability, generator)
    means = torch.cat([vae.encode(b * 2 - 1).latent_dist.mean for b in x.split(256)])
    return float(1.0 / means.std())


def load_initial_weights(folder: str, sizes: PriorSizes, prediction_type: str, tokenizer,
                         vae, unet, text_encoder) -> float:
    """Loads a prior folder's weights into the freshly built parts (their shapes must match), and
    returns its latent scaling factor. Refuses a folder of another size, tokenizer or target."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from ..prior.loading import resolve_shipped

    folder = resolve_shipped(folder)  # 'shapes' / 'shapes-v2': a shipped prior
    if not os.path.isfile(os.path.join(folder, "model_index.json")):
        raise TrainError(f"--init-from '{folder}' is not a prior folder (no model_index.json)")
    has_vae = os.path.isdir(os.path.join(folder, "vae"))
    if has_vae == sizes.pixel_space:
        raise TrainError(f"--init-from '{folder}' is {'a latent' if has_vae else 'a pixel-space'} "
                         f"prior; this run is {'pixel-space' if sizes.pixel_space else 'latent'}")
    if CLIPTokenizer.from_pretrained(os.path.join(folder, "tokenizer")).get_vocab() != tokenizer.get_vocab():
        raise TrainError(f"--init-from '{folder}' has another tokenizer")
    theirs = DDPMScheduler.from_pretrained(os.path.join(folder, "scheduler")).config.prediction_type
    if theirs != prediction_type:
        raise TrainError(f"--init-from '{folder}' predicts {theirs}, this run --prediction-type "
                         f"{prediction_type}")
    parts = [(unet, UNet2DConditionModel, "unet"), (text_encoder, CLIPTextModel, "text_encoder")]
    if has_vae:
        parts.append((vae, AutoencoderKL, "vae"))
    scale = 1.0
    for module, cls, sub in parts:
        loaded = cls.from_pretrained(os.path.join(folder, sub))
        if sub == "vae":
            scale = float(loaded.config.scaling_factor)
        try:
            module.load_state_dict(loaded.state_dict())
        except RuntimeError as err:  # missing / unexpected keys or shape mismatches
            raise TrainError(f"--init-from '{folder}': its {sub} has other sizes than this run's "
                             f"({str(err).splitlines()[0]})") from None
    return scale


class EMA:
    """Exponential moving average of parameters, with the usual warm-up of the decay."""

    def __init__(self, module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module, step: int):
        decay = min(self.decay, (1 + step) / (10 + step))
        for k, v in module.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
            else:
                self.shadow[k].copy_(v)


def train(args) -> str:
    from tqdm import tqdm

    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    ckpt_path = os.path.join(args.out, "checkpoint.pt")
    sizes = PriorSizes(resolution=args.resolution, vae_channels=tuple(args.vae_channels),
                       unet_channels=tuple(args.unet_channels), text_width=args.text_width,
                       pixel_space=args.pixel_space, unet_layers=args.unet_layers)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "ckpt_every", "threads")}
    # Settings added after version 2 have defaults that reproduce it, so its checkpoints resume.
    added = {"unet_layers": 1, "pixel_space": False, "balance_views": False,
             "prediction_type": "epsilon", "init_from": None}
    # A resumed run may be lengthened (trained in several sittings): the step counts may change,
    # the learning-rate schedule then follows the new length. Nothing else may.
    fixed = {k: v for k, v in settings.items() if k not in ("vae_steps", "unet_steps")}

    torch.manual_seed(args.seed)
    tokenizer = build_tokenizer(os.path.join(args.out, "tokenizer"))
    vae = build_vae(sizes)
    text_encoder = build_text_encoder(sizes, len(tokenizer))
    unet = build_unet(sizes)
    scheduler = build_scheduler(args.pixel_space, args.prediction_type)
    generator = torch.Generator().manual_seed(args.seed + 1)
    vae_opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    # Pixel space: no VAE phase, and the "latents" are the images in [-1, 1] (scale 1).
    state = ({"phase": "unet", "step": 0, "scaling_factor": 1.0} if args.pixel_space else
             {"phase": "vae", "step": 0, "scaling_factor": None})
    if args.init_from and not os.path.isfile(ckpt_path):
        scale = load_initial_weights(args.init_from, sizes, args.prediction_type, tokenizer, vae, unet,
                                     text_encoder)
        state = {"phase": "unet", "step": 0, "scaling_factor": scale}
    unet_params = list(unet.parameters()) + list(text_encoder.parameters())
    unet_opt = torch.optim.AdamW(unet_params, lr=args.unet_lr, weight_decay=1e-4)
    unet_ema, text_ema = EMA(unet, args.ema_decay), EMA(text_encoder, args.ema_decay)
    if os.path.isfile(ckpt_path):
        saved = load_checkpoint(ckpt_path)
        saved_fixed = {k: saved["settings"].get(k, added.get(k)) for k in fixed}
        if saved_fixed != fixed:
            changed = sorted(k for k in fixed if saved_fixed.get(k) != fixed[k])
            raise TrainError(f"'{ckpt_path}' was trained with other settings "
                             f"({', '.join(changed)}); use another --out")
        vae.load_state_dict(saved["vae"])
        vae_opt.load_state_dict(saved["vae_opt"])
        unet.load_state_dict(saved["unet"])
        text_encoder.load_state_dict(saved["text_encoder"])
        unet_opt.load_state_dict(saved["unet_opt"])
        unet_ema.shadow, text_ema.shadow = saved["unet_ema"], saved["text_ema"]
        generator.set_state(saved["generator"])
        state = {k: saved[k] for k in ("phase", "step", "scaling_factor")}

    def checkpoint():
        _save({**state, "settings": settings, "vae": vae.state_dict(),
               "vae_opt": vae_opt.state_dict(), "unet": unet.state_dict(),
               "text_encoder": text_encoder.state_dict(), "unet_opt": unet_opt.state_dict(),
               "unet_ema": unet_ema.shadow, "text_ema": text_ema.shadow,
               "generator": generator.get_state()}, ckpt_path)

    n_views = args.views_per_object
    render_bar = tqdm(total=8 * 16 * -(-n_views // 16), desc="render", unit="img", dynamic_ncols=True,
                      leave=False)
    data = load_or_build_dataset(os.path.join(args.out, "dataset.npz"), n_views, args.resolution,
                                 args.seed, progress=render_bar.update)
    render_bar.close()
    images, alphas, text_index = data["images"], data["alpha"], data["text_index"]
    n_images, uncond_index = images.shape[0], len(data["texts"]) - 1
    draw_weights = balanced_draw_weights(text_index, len(data["texts"])) if args.balance_views else None
    tokens = tokenizer(data["texts"], padding="max_length", max_length=tokenizer.model_max_length,
                       truncation=True, return_tensors="pt").input_ids

    total = args.vae_steps + args.unet_steps
    done = state["step"] + (args.vae_steps if state["phase"] == "unet" else 0)
    bar = tqdm(total=total, initial=min(done, total), unit="step", dynamic_ncols=True)

    if state["phase"] == "vae":
        vae.train()
        while state["step"] < args.vae_steps:
            for group in vae_opt.param_groups:
                group["lr"] = args.vae_lr * _lr_factor(state["step"], args.vae_steps)
            x = vae_batch(images, alphas, args, generator) * 2 - 1
            posterior = vae.encode(x).latent_dist
            recon = vae.decode(posterior.sample(generator=generator)).sample
            rec = F.mse_loss(recon, x) + 0.5 * F.l1_loss(recon, x)
            kl = posterior.kl().mean() / posterior.mean[0].numel()
            loss = rec + args.kl_weight * kl
            vae_opt.zero_grad(set_to_none=True)
            loss.backward()
            vae_opt.step()
            state["step"] += 1
            bar.update(1)
            bar.set_postfix(phase="vae", rec=f"{float(rec):.4f}", kl=f"{float(kl):.3g}")
            if state["step"] % args.ckpt_every == 0 or state["step"] == args.vae_steps:
                checkpoint()
        state.update(phase="unet", step=0)

    vae.eval()
    vae.requires_grad_(False)
    if state["scaling_factor"] is None:
        state["scaling_factor"] = latent_scale(vae, images, alphas, args.white_background, args.seed)
        checkpoint()
    scale = state["scaling_factor"]

    unet.train()
    text_encoder.train()
    while state["step"] < args.unet_steps:
        for group in unet_opt.param_groups:
            group["lr"] = args.unet_lr * _lr_factor(state["step"], args.unet_steps)
        if args.balance_views:
            idx = torch.multinomial(draw_weights, args.batch_size, replacement=True, generator=generator)
        else:  # version 2's draw, kept bit for bit
            idx = torch.randint(n_images, (args.batch_size,), generator=generator)
        flips = torch.rand(args.batch_size, generator=generator) < 0.5
        x = object_batch(images, alphas, idx, flips, args.white_background, generator)
        if args.pixel_space:
            latents = x * 2 - 1
        else:
            with torch.no_grad():
                dist = vae.encode(x * 2 - 1).latent_dist
                latents = (dist.mean + dist.std * torch.randn(dist.mean.shape, generator=generator)) * scale
        noise = torch.randn(latents.shape, generator=generator)
        t = torch.randint(scheduler.config.num_train_timesteps, (args.batch_size,), generator=generator)
        drop = torch.rand(args.batch_size, generator=generator) < args.text_dropout
        which = torch.where(drop, torch.full_like(idx, uncond_index), text_index[idx])
        hidden = text_encoder(tokens)[0][which]
        noisy = scheduler.add_noise(latents, noise, t)
        target = noise if args.prediction_type == "epsilon" else scheduler.get_velocity(latents, noise, t)
        loss = F.mse_loss(unet(noisy, t, encoder_hidden_states=hidden).sample, target)
        unet_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet_params, 1.0)
        unet_opt.step()
        unet_ema.update(unet, state["step"])
        text_ema.update(text_encoder, state["step"])
        state["step"] += 1
        bar.update(1)
        bar.set_postfix(phase="unet", loss=f"{float(loss):.4f}")
        if state["step"] % args.ckpt_every == 0 or state["step"] == args.unet_steps:
            checkpoint()
    bar.close()

    unet.load_state_dict(unet_ema.shadow)
    text_encoder.load_state_dict(text_ema.shadow)
    vae.requires_grad_(True)
    vae.register_to_config(scaling_factor=scale)
    folder = save_pipeline(os.path.join(args.out, "pipeline"), unet.eval(),
                           None if args.pixel_space else vae, text_encoder.eval(), tokenizer, scheduler)
    with open(os.path.join(folder, "training_args.json"), "w") as fh:
        json.dump(settings, fh, indent=2)
    return folder


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.vae_steps is None:
        args.vae_steps = 0 if args.pixel_space or args.init_from else 800
    elif args.pixel_space and args.vae_steps:
        print("l2vsd_ext.shapes.train: error: --pixel-space has no VAE; leave out --vae-steps (or give 0)",
              file=sys.stderr)
        return 2
    elif args.init_from and args.vae_steps:
        print("l2vsd_ext.shapes.train: error: --init-from keeps its prior's VAE; leave out --vae-steps "
              "(or give 0)", file=sys.stderr)
        return 2
    for name in ("views_per_object", "vae_steps", "unet_steps", "batch_size", "ckpt_every", "threads",
                 "unet_layers"):
        if getattr(args, name) < 1 and not (name.endswith("_steps") and getattr(args, name) == 0):
            print(f"l2vsd_ext.shapes.train: error: --{name.replace('_', '-')} must be >= 1",
                  file=sys.stderr)
            return 2
    for name in ("white_background", "generic_fraction", "text_dropout"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            print(f"l2vsd_ext.shapes.train: error: --{name.replace('_', '-')} must be in [0, 1]",
                  file=sys.stderr)
            return 2
    try:
        folder = train(args)
    except TrainError as err:
        print(f"l2vsd_ext.shapes.train: error: {err}", file=sys.stderr)
        return 2
    print(f"prior written to {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
