"""Reconstruction ceiling of the latent models' conv encoder and decoder: a plain
autoencoder (``ConvEncoder -> Linear -> LayerNorm -> ConvDecoder`` of
:mod:`visfore_models.latent`, a continuous ``--embed-dim`` bottleneck, pixel MSE only)
trained for ``--seconds`` on single frames of a ``visfore collect`` dataset.

It answers one question when a latent world model's decoded frames are poor: can this
encoder and decoder reconstruct these frames at all? ``rssm`` reconstructs through its
posterior latent (its ``train_mse`` in ``metrics.json``), ``jepa``'s decoder reads
detached embeddings; if this autoencoder reaches a much higher PSNR in a few minutes, the
limit is the model's latent, not the conv stacks.

Prints, every ``--every`` steps, the training MSE and the PSNR (dB, frames in [0, 1]) on
held-out frames (the dataset's last ``--val-frames`` rows), with the elapsed seconds; one
torch thread unless ``--threads``.

    python benchmarks/reconstruction_ceiling.py --data data/plan-reacher-smooth32.zarr
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import zarr
from torch import nn

from visfore_models.latent import ConvDecoder, ConvEncoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a visfore collect dataset (Zarr)")
    parser.add_argument("--seconds", type=float, default=120.0, help="training time (default 120)")
    parser.add_argument("--depth", type=int, default=16, help="conv depth (the models' default 16)")
    parser.add_argument("--embed-dim", type=int, default=128, help="bottleneck size (default 128)")
    parser.add_argument("--frames", type=int, default=60000, help="rows read from the dataset")
    parser.add_argument("--val-frames", type=int, default=2000, help="held-out rows (the last ones)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--every", type=int, default=500, help="steps between reports")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.val_frames >= args.frames:
        parser.error(f"--val-frames {args.val_frames} must be below --frames {args.frames}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    try:
        pixels = zarr.open_array(f"{args.data}/data/pixels", mode="r")
    except (FileNotFoundError, KeyError, ValueError) as err:  # zarr raises one of these for a missing array
        parser.error(f"--data {args.data!r} is not a visfore collect dataset with data/pixels ({type(err).__name__})")
    if min(args.frames, pixels.shape[0]) <= args.val_frames:
        parser.error(f"--data has {pixels.shape[0]} frames: too few for --val-frames {args.val_frames} held out")
    frames = torch.from_numpy(np.asarray(pixels[: args.frames])).permute(0, 3, 1, 2).contiguous()  # uint8 (N, 3, H, W)
    val = frames[-args.val_frames :].float() / 255.0
    train = frames[: -args.val_frames]
    size = (int(frames.shape[2]), int(frames.shape[3]))

    encoder = ConvEncoder(size, args.depth)
    bottleneck = nn.Sequential(nn.Linear(encoder.out_dim, args.embed_dim), nn.LayerNorm(args.embed_dim))
    decoder = ConvDecoder(args.embed_dim, size, args.depth)
    net = nn.Sequential(encoder, bottleneck, decoder)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    print(
        f"autoencoder depth {args.depth}, bottleneck {args.embed_dim}, {size[0]}x{size[1]} frames, "
        f"{sum(p.numel() for p in net.parameters()):,} parameters, {args.threads} thread(s)"
    )
    start, step = time.perf_counter(), 0
    while time.perf_counter() - start < args.seconds:
        batch = train[torch.randint(0, len(train), (args.batch_size,))].float() / 255.0
        loss = ((net(batch) - batch) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % args.every == 0:
            with torch.no_grad():
                mse = sum(((net(v) - v) ** 2).sum().item() for v in val.split(500)) / val.numel()
            elapsed = time.perf_counter() - start
            print(
                f"step {step:6d}  {elapsed:6.0f} s  train MSE {loss.item():.5f}  "
                f"held-out PSNR {10 * math.log10(1.0 / mse):.2f} dB",
                flush=True,
            )


if __name__ == "__main__":
    main()
