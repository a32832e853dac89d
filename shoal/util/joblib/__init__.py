"""joblib on the cluster (as `ray.util.joblib`): scikit-learn's `n_jobs` runs on shoal.

    from shoal.util.joblib import register_shoal
    register_shoal()
    with joblib.parallel_backend("shoal"):
        GridSearchCV(..., n_jobs=-1).fit(X, y)

joblib is not a dependency of shoal: install it (`pip install joblib`) to use this.
"""
try:
    import joblib as _joblib  # noqa: F401
except ImportError as exc:
    raise ImportError("shoal.util.joblib needs joblib, which is not installed: "
                      "`pip install joblib` (scikit-learn brings it too)") from exc

from .backend import ShoalBackend, register_shoal

__all__ = ["ShoalBackend", "register_shoal"]
