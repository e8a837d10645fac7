"""Write the demo's example models as torch.export archives: examples/mlp.pt2, conv1d.pt2."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import blocks  # noqa: E402


def main(out_dir: Path = Path(__file__).parent) -> None:
    for name in ("mlp", "conv1d"):
        torch.manual_seed(0)
        module, args = getattr(blocks, name)()
        path = out_dir / f"{name}.pt2"
        torch.export.save(torch.export.export(module, args), str(path))
        print(f"wrote {path}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
