"""Draws the Roster app icon and writes every size the Tauri bundler uses.

Run from the repository root: `python3 icons/generate.py` (needs Pillow from PyPI).
The output files are committed, so building the app does not need Python.
"""

from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
SIZE = 1024


def draw(size: int = SIZE) -> Image.Image:
    """A rounded teal tile with a white card showing three list rows and a sync mark."""
    scale = size / SIZE
    s = lambda v: round(v * scale)  # noqa: E731
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.rounded_rectangle((s(64), s(64), s(960), s(960)), radius=s(200), fill=(15, 118, 110, 255))
    d.rounded_rectangle((s(220), s(210), s(804), s(814)), radius=s(70), fill=(255, 255, 255, 255))
    for i, width in enumerate((420, 340, 380)):
        top = s(300 + i * 160)
        d.ellipse((s(290), top, s(370), top + s(80)), fill=(20, 184, 166, 255))
        d.rounded_rectangle(
            (s(400), top + s(18), s(400 + width - 60), top + s(62)),
            radius=s(22),
            fill=(51, 65, 85, 255),
        )
    return img


def main() -> None:
    big = draw()
    big.save(HERE / "icon.png")
    for name, px in (("32x32.png", 32), ("64x64.png", 64), ("128x128.png", 128), ("128x128@2x.png", 256)):
        big.resize((px, px), Image.LANCZOS).save(HERE / name)
    big.save(HERE / "icon.ico", sizes=[(16, 16), (24, 24), (32, 32), (48, 48), (64, 64), (256, 256)])
    big.save(HERE / "icon.icns")


if __name__ == "__main__":
    main()
