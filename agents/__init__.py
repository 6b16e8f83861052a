"""What one user knows and decides: scoring strategies, the local decision rule,
the coalition's coordinator and the Flower ClientApp."""
