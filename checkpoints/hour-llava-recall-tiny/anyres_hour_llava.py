"""anyres_max_9: high-resolution single images as tiles (reference Sec. 1.3 and 1.6.2).

Processor side: the best grid of 384 px tiles for the image (`select_best_resolution`), the image resized into it
and letterboxed (`resize_and_pad`), cut into tiles row by row, after a plain 384 x 384 resize of the whole image
(the base tile).

Model side: the tiles' patch grids are stitched into one (rows x cols) grid, the letterbox is cropped off
(`unpad_grid`), grids above 9 tiles' worth of patches are shrunk (bilinear), and the memory and decayed tokens are
laid out with the reference's position ids: the unpadded grid numbered row-major, base tokens sharing the id of the
grid token nearest to them, and every newline the id `rows * cols`.

The reference draws random spatial forgetting independently per token, so a row of the unpadded grid can end up
empty (probability about (3/4)^cols), which changes how many newlines follow. Here a draw with an empty row is
redrawn, so the processor can write the exact number of placeholders; the kept set is still uniform among the
draws that keep every row.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from PIL import Image

from .memory_hour_llava import TokensWithPositions, spatial_forgetting, spatial_keep_count


# ----------------------------------------------------------------------------------------------------------------
# Geometry shared by the processor and the model
# ----------------------------------------------------------------------------------------------------------------
def select_best_resolution(image_size: tuple[int, int], candidates: list[list[int]]) -> tuple[int, int]:
    """The (height, width) candidate that keeps the most of the image's resolution, then wastes the least area.

    image_size: (height, width) of the original image; candidates: [[height, width], ...].
    """
    height, width = image_size
    best, best_effective, best_wasted = None, -1, math.inf
    # The reference walks its (width, height) pairs width-major; ties keep the first one found.
    for cand_height, cand_width in sorted(candidates, key=lambda hw: (hw[1], hw[0])):
        scale = min(cand_width / width, cand_height / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        wasted = cand_width * cand_height - effective
        if effective > best_effective or (effective == best_effective and wasted < best_wasted):
            best, best_effective, best_wasted = (cand_height, cand_width), effective, wasted
    return best


def tile_grid_shape(image_size: tuple[int, int], candidates: list[list[int]], tile_size: int) -> tuple[int, int]:
    """(rows, cols) of tiles for an image of (height, width)."""
    height, width = select_best_resolution(image_size, candidates)
    return height // tile_size, width // tile_size


def unpadded_size(grid: tuple[int, int], image_size: tuple[int, int]) -> tuple[int, int]:
    """(rows, cols) of a stitched patch grid after cropping the letterbox of an image of (height, width).

    As the reference: the padding on each side is `(current - content) // 2`, so an odd margin leaves one extra row
    or column of padding in."""
    rows, cols = grid
    height, width = image_size
    if width / height > cols / rows:
        content = int(height * (cols / width))
        return rows - 2 * ((rows - content) // 2), cols
    content = int(width * (rows / height))
    return rows, cols - 2 * ((cols - content) // 2)


def shrunk_size(size: tuple[int, int], max_patches: int) -> tuple[int, int]:
    """The reference's `anyres_max_9` shrink: grids above max_patches * 1.1^2 are scaled to about max_patches."""
    rows, cols = size
    times = math.sqrt(rows * cols / max_patches)
    if times > 1.1:
        return int(rows // times), int(cols // times)
    return rows, cols


def anyres_token_count(
    image_size: tuple[int, int],
    candidates: list[list[int]],
    tile_size: int,
    grid_size: int,
    keep_ratio: float,
    mode: str,
    max_tiles: int,
) -> int:
    """Decoder tokens of one anyres image: kept base tokens, kept grid tokens, one newline per grid row that keeps a
    token (every row for `random`, see the module docstring; every other row for `uniform`)."""
    rows, cols = tile_grid_shape(image_size, candidates, tile_size)
    rows, cols = unpadded_size((rows * grid_size, cols * grid_size), image_size)
    rows, cols = shrunk_size((rows, cols), max_tiles * grid_size * grid_size)
    base = spatial_keep_count(grid_size, keep_ratio, mode)
    if mode == "uniform":
        stride = round(1 / math.sqrt(keep_ratio))
        kept_rows = math.ceil(rows / stride)
        return base + kept_rows * math.ceil(cols / stride) + kept_rows
    return base + math.ceil(rows * cols * keep_ratio) + rows


# ----------------------------------------------------------------------------------------------------------------
# Processor side
# ----------------------------------------------------------------------------------------------------------------
def resize_and_pad(image: Image.Image, target: tuple[int, int]) -> Image.Image:
    """Resize keeping the aspect ratio to fit (height, width), centred on a black canvas."""
    target_height, target_width = target
    width, height = image.size
    if target_width / width < target_height / height:
        new_width, new_height = target_width, min(math.ceil(height * target_width / width), target_height)
    else:
        new_height, new_width = target_height, min(math.ceil(width * target_height / height), target_width)
    canvas = Image.new("RGB", (target_width, target_height), (0, 0, 0))
    canvas.paste(
        image.resize((new_width, new_height)), ((target_width - new_width) // 2, (target_height - new_height) // 2)
    )
    return canvas


def anyres_tiles(image: Image.Image, candidates: list[list[int]], tile_size: int) -> list[Image.Image]:
    """[base, tile_1, ..., tile_P]: the whole image resized to one tile, then the letterboxed image's tiles in
    row-major order."""
    image = image.convert("RGB")
    target = select_best_resolution((image.height, image.width), candidates)
    padded = resize_and_pad(image, target)
    tiles = [
        padded.crop((left, top, left + tile_size, top + tile_size))
        for top in range(0, target[0], tile_size)
        for left in range(0, target[1], tile_size)
    ]
    return [image.resize((tile_size, tile_size))] + tiles


# ----------------------------------------------------------------------------------------------------------------
# Model side
# ----------------------------------------------------------------------------------------------------------------
def stitch_and_unpad(
    tiles: torch.Tensor, tile_rows: int, tile_cols: int, image_size: tuple[int, int], max_patches: int
) -> torch.Tensor:
    """Tile features (P, g*g, D) -> the unpadded, possibly shrunk grid (rows, cols, D)."""
    count, per_tile, width = tiles.shape
    grid = math.isqrt(per_tile)
    stitched = tiles.view(tile_rows, tile_cols, grid, grid, width).permute(4, 0, 2, 1, 3)
    stitched = stitched.reshape(width, tile_rows * grid, tile_cols * grid)
    rows, cols = unpadded_size((tile_rows * grid, tile_cols * grid), image_size)
    top = (tile_rows * grid - rows) // 2
    left = (tile_cols * grid - cols) // 2
    stitched = stitched[:, top : top + rows, left : left + cols]
    target = shrunk_size((rows, cols), max_patches)
    if target != (rows, cols):
        stitched = F.interpolate(stitched.unsqueeze(0), size=target, mode="bilinear")[0]
    return stitched.permute(1, 2, 0)


def _rows_all_kept(kept: torch.Tensor, rows: int, cols: int) -> bool:
    return bool(torch.bincount(kept // cols, minlength=rows).gt(0).all())


def grid_forgetting(
    rows: int, cols: int, keep_ratio: float, mode: str, generator: torch.Generator | None
) -> torch.Tensor:
    """Row-major indices kept in a (rows x cols) grid: random ceil(rows*cols*ratio) with every row kept non-empty, or
    every s-th row and column."""
    if mode == "uniform":
        stride = round(1 / math.sqrt(keep_ratio))
        rr, cc = torch.meshgrid(torch.arange(0, rows, stride), torch.arange(0, cols, stride), indexing="ij")
        return (rr * cols + cc).flatten()
    keep = math.ceil(rows * cols * keep_ratio)
    while True:
        kept = torch.rand(rows * cols, generator=generator).topk(keep, largest=False).indices.sort().values
        if keep < rows or _rows_all_kept(kept, rows, cols):
            return kept


def anyres_memory_and_queries(
    tiles: torch.Tensor,
    newline: torch.Tensor,
    image_size: tuple[int, int],
    tile_rows: int,
    tile_cols: int,
    keep_ratio: float,
    mode: str,
    max_patches: int,
    generator: torch.Generator | None = None,
) -> tuple[TokensWithPositions, TokensWithPositions]:
    """Memory and decayed tokens of one anyres image. tiles: (1 + P, g*g, D) projected, base first."""
    base, grid_size = tiles[0], math.isqrt(tiles.shape[1])
    grid = stitch_and_unpad(tiles[1:], tile_rows, tile_cols, image_size, max_patches)
    rows, cols, width = grid.shape
    device = tiles.device
    newline_id = rows * cols
    grid_positions = torch.arange(rows * cols, device=device).view(rows, cols)
    near_rows = torch.linspace(0, rows - 1, grid_size).round().long().to(device)
    near_cols = torch.linspace(0, cols - 1, grid_size).round().long().to(device)
    base_positions = grid_positions[near_rows][:, near_cols].flatten()

    newline_row = newline.to(grid.dtype).view(1, 1, width).expand(rows, 1, width)
    memory = torch.cat([base, torch.cat([grid, newline_row], dim=1).reshape(-1, width)])
    row_positions = torch.cat([grid_positions, torch.full((rows, 1), newline_id, device=device)], dim=1)
    memory_positions = torch.cat([base_positions, row_positions.flatten()])

    kept_base = spatial_forgetting(1, grid_size, keep_ratio, mode, generator)[0].to(device)
    kept_grid = grid_forgetting(rows, cols, keep_ratio, mode, generator).to(device)
    flat = grid.reshape(-1, width)
    pieces, positions = [base[kept_base]], [base_positions[kept_base]]
    kept_rows = kept_grid // cols
    for row in kept_rows.unique(sorted=True).tolist():
        in_row = kept_grid[kept_rows == row]
        pieces += [flat[in_row], newline.to(grid.dtype).view(1, width)]
        positions += [grid_positions.flatten()[in_row], torch.tensor([newline_id], device=device)]
    queries = TokensWithPositions(torch.cat(pieces), torch.cat(positions))
    return TokensWithPositions(memory, memory_positions), queries


__all__ = [
    "anyres_memory_and_queries",
    "anyres_tiles",
    "anyres_token_count",
    "resize_and_pad",
    "select_best_resolution",
    "stitch_and_unpad",
    "tile_grid_shape",
]
