"""`gpuclust evaluate`: do the clusters help recommend? Leave-last-out HR@K and NDCG@K."""

from gpuclust.recommend.evaluation import evaluate, evaluate_files, markdown_table
from gpuclust.recommend.split import Holdout, leave_last_out

__all__ = ["Holdout", "evaluate", "evaluate_files", "leave_last_out", "markdown_table"]
