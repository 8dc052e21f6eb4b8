"""The PyTorch reference loop for `scripts/bench-train.sh`: the same BitNet b1.58 model, batches and optimizer
as `bitnet train --bench`, timed the same way (one untimed warm-up step, then N steps of forward, backward,
per-parameter clipping and AdamW), QAT and full precision. Prints one JSON object.

    python3 scripts/bench_train_torch.py --config CONFIG_JSON --tokens TOKENS_JSON --context 129 \
        --batch-size 16 --steps 10 --threads 2

The model is written out here, eager PyTorch as a user would write it: the 2B-4T block (RMSNorm; q/k/v with
rotate-half RoPE and grouped-query causal attention through `scaled_dot_product_attention`; an RMSNorm before
o_proj; relu² gate times up, an RMSNorm before down_proj), tied embeddings, every projection a BitLinear with
straight-through fake quantization (absmean ternary weights, per-token absmax int8 activations); the
full-precision run skips the quantizers.
"""

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
from torch import nn


class BitLinear(nn.Linear):
    def __init__(self, d_in, d_out, quantized):
        super().__init__(d_in, d_out, bias=False)
        self.quantized = quantized

    def forward(self, x):
        w = self.weight
        if self.quantized:
            g = w.abs().mean().clamp(min=1e-5)
            w = w + ((w * (1.0 / g)).round().clamp(-1, 1) * g - w).detach()
            s = 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
            x = x + ((x * s).round().clamp(-128, 127) / s - x).detach()
        return F.linear(x, w)


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Block(nn.Module):
    def __init__(self, c, q):
        super().__init__()
        h, d = c["hidden_size"], c["head_dim"]
        self.heads, self.kv, self.d = c["num_attention_heads"], c["num_key_value_heads"], d
        eps = c["rms_norm_eps"]
        self.input_norm, self.post_norm = RMSNorm(h, eps), RMSNorm(h, eps)
        self.q, self.k, self.v = BitLinear(h, self.heads * d, q), BitLinear(h, self.kv * d, q), BitLinear(h, self.kv * d, q)
        self.attn_sub_norm, self.o = RMSNorm(self.heads * d, eps), BitLinear(self.heads * d, h, q)
        i = c["intermediate_size"]
        self.gate, self.up = BitLinear(h, i, q), BitLinear(h, i, q)
        self.ffn_sub_norm, self.down = RMSNorm(i, eps), BitLinear(i, h, q)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        y = self.input_norm(x)
        q = self.q(y).view(b, t, self.heads, self.d).transpose(1, 2)
        k = self.k(y).view(b, t, self.kv, self.d).transpose(1, 2)
        v = self.v(y).view(b, t, self.kv, self.d).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + self.o(self.attn_sub_norm(a.transpose(1, 2).reshape(b, t, -1)))
        y = self.post_norm(x)
        return x + self.down(self.ffn_sub_norm(F.relu(self.gate(y)).square() * self.up(y)))


class Model(nn.Module):
    def __init__(self, c, quantized):
        super().__init__()
        self.embed = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.blocks = nn.ModuleList([Block(c, quantized) for _ in range(c["num_hidden_layers"])])
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        d, theta = c["head_dim"], c.get("rope_theta", 10000.0)
        self.inv_freq = theta ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)

    def forward(self, ids):
        t = ids.shape[1]
        freqs = torch.outer(torch.arange(t, dtype=torch.float32), self.inv_freq)
        emb = torch.cat([freqs, freqs], dim=-1)
        cos, sin = emb.cos(), emb.sin()
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x, cos, sin)
        return F.linear(self.norm(x), self.embed.weight)


def seconds_per_step(config, windows, args, quantized):
    torch.manual_seed(0)
    model = Model(config, quantized)
    optim = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.1)
    started = time.perf_counter()
    for step in range(args.steps + 1):
        if step == 1:
            started = time.perf_counter()
        batch = windows[(step * args.batch_size) % len(windows):][: args.batch_size]
        if len(batch) < args.batch_size:
            batch = windows[: args.batch_size]
        ids = torch.tensor(batch)
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        optim.zero_grad(set_to_none=True)
        loss.backward()
        for p in model.parameters():
            torch.nn.utils.clip_grad_norm_([p], 1.0)
        optim.step()
    return (time.perf_counter() - started) / args.steps


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--tokens", required=True)
    parser.add_argument("--context", type=int, default=129)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = json.load(open(args.config))
    config.setdefault("head_dim", config["hidden_size"] // config["num_attention_heads"])
    tokens = json.load(open(args.tokens))
    windows = [tokens[i:i + args.context] for i in range(0, len(tokens) - args.context + 1, args.context)]
    qat = seconds_per_step(config, windows, args, True)
    fp = seconds_per_step(config, windows, args, False)
    per_step = args.batch_size * (args.context - 1)
    print(json.dumps({
        "torch": torch.__version__, "threads": args.threads, "steps": args.steps, "tokens_per_step": per_step,
        "qat_ms_per_step": qat * 1e3, "fp_ms_per_step": fp * 1e3, "ratio": qat / fp,
        "qat_tokens_per_s": per_step / qat, "fp_tokens_per_s": per_step / fp,
    }))


if __name__ == "__main__":
    main()
