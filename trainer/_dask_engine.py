"""Fitting on a Dask cluster with LightGBM's Dask interface (``trainer: {engine: dask}``).

Each worker holds a share of the rows and LightGBM trains across them over its own sockets, so
the trees see every row without one process holding them all while it trains. Two things differ
from the local fit, both because LightGBM's distributed training cannot stop early (its workers
would stop at different trees and drop their connections): the number of trees, when the model
does not fix it, comes from early stopping on the latest ``tree_search_rows`` training rows in the
trainer's process; and the cluster then fits exactly that many. The model comes back as an
ordinary booster, which the same gate judges and the same registry serves.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import lightgbm as lgb

from closedloop.contracts import ConfigError, TrainerConfig
from closedloop.policy import FeatureEncoder

from ._training import Dataset

logger = logging.getLogger(__name__)


class DaskEngine:
    """Fits models on a Dask cluster; connects (or starts a local cluster) on first use."""

    def __init__(self, settings: TrainerConfig) -> None:
        self._settings = settings
        self.search_rows: int | None = settings.tree_search_rows
        self._client: Any = None
        self._cluster: Any = None

    def trees(
        self, data: Dataset, encoder: FeatureEncoder, params: dict[str, Any], count: int
    ) -> lgb.Booster:
        import dask.array as da  # dask and distributed are untyped: hence the ignores below

        client = self._connect()
        workers = max(1, len(client.scheduler_info()["workers"]))
        chunk = math.ceil(len(data) / workers)  # one share of the rows per worker
        features = da.from_array(data.features, chunks=(chunk, data.features.shape[1]))  # type: ignore[no-untyped-call]
        labels = da.from_array(data.labels, chunks=chunk)  # type: ignore[no-untyped-call]
        # The regressor's estimator with the trainer's own objective (binary included): the same
        # booster as lgb.train's, without the classifier's label encoding.
        model = lgb.DaskLGBMRegressor(client=client, n_estimators=count, **params)
        with warnings.catch_warnings():
            # LightGBM's own scikit-learn layer passes n_jobs, which its Dask layer then drops in
            # favour of each worker's threads: the warning says nothing about our parameters.
            warnings.filterwarnings("ignore", "Parameter n_jobs will be ignored", UserWarning)
            model.fit(
                features,
                labels,
                feature_name=list(encoder.feature_names),
                categorical_feature=list(encoder.categorical_features) or "auto",
            )
        logger.info("fitted %d trees on %d rows across %d Dask workers", count, len(data), workers)
        return model.booster_

    def describe(self) -> dict[str, Any]:
        """What the lineage records of where a model was fitted."""
        client = self._connect()
        return {
            "engine": "dask",
            "scheduler": self._settings.scheduler or "local cluster",
            "workers": len(client.scheduler_info()["workers"]),
        }

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def _connect(self) -> Any:
        if self._client is not None:
            return self._client
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ConfigError(
                "trainer.engine is dask, but Dask's distributed scheduler is not installed.",
                hint="pip install 'closedloop[distributed]'",
            ) from None
        if self._settings.scheduler:
            self._client = Client(self._settings.scheduler, timeout=30)  # type: ignore[no-untyped-call]
        else:
            self._cluster = LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=self._settings.workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
            )
            self._client = Client(self._cluster)  # type: ignore[no-untyped-call]
        return self._client
