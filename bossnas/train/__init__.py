"""Block-wise training of the Siamese supernet."""
