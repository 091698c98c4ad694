"""An independent, loop-by-loop ParC from PARC.md section 1, the oracle for the tests."""

from __future__ import annotations

import torch


def naive_parc(x, weight, bias, pe, direction, groups):
    """y[b,o,i,j] = bias[o] + sum_{c in group(o)} sum_k w[o,c,k] * (x+pe)[b,c,(i+k) mod H, j]."""
    if direction == "W":  # a 'W' ParC is an 'H' ParC of the transposed map
        t = lambda a: None if a is None else a.transpose(2, 3)  # noqa: E731
        return naive_parc(t(x), t(weight), bias, t(pe), "H", groups).transpose(2, 3)
    b, c, h, w = x.shape
    out_chs, cg, k_len = weight.shape[0], weight.shape[1], weight.shape[2]
    assert k_len == h, "the oracle expects the kernel already at the map's length"
    xt = x if pe is None else x + pe
    og = out_chs // groups
    rows = []
    for o in range(out_chs):
        g = o // og
        acc = torch.zeros(b, h, w, dtype=x.dtype)
        for ci in range(cg):
            cin = g * cg + ci
            for k in range(k_len):
                idx = [(i + k) % h for i in range(h)]
                acc = acc + weight[o, ci, k, 0] * xt[:, cin, idx, :]
        if bias is not None:
            acc = acc + bias[o]
        rows.append(acc)
    return torch.stack(rows, dim=1)
