"""Cluster quality: silhouette, Davies-Bouldin, Calinski-Harabasz, ARI/NMI, and per-user anomaly scores."""
