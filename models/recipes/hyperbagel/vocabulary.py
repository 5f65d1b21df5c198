"""The Shapes world's attribute words, as the recipes use them (mirrors src/world/vocabulary.ts; no torch)."""

COLORS = ["red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink"]
SHAPES = ["circle", "square", "triangle", "star"]
SIZES = ["small", "large"]
BACKGROUNDS = ["white", "black", "gray", "beige"]
CELLS = ["top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"]
