"""hyperbagel training recipes: a miniature BAGEL (MoT decoder + ViT + conv VAE) for the Shapes world."""
