"""Customer analytics: summaries from the log, CLV, segments, basket and sequence rules,
propensities and imputed traits — each an estimator whose results are workspace tables
(``ws.analytics``), reachable from ``plait analyze`` and ``/v1/analytics``."""

from plait.analytics.baskets import AssociationRules, SequenceRules
from plait.analytics.clv import BetaGeoModel, GammaGammaModel, ParetoNBDModel
from plait.analytics.propensity import Propensity
from plait.analytics.segments import Segmentation

__all__ = ["AssociationRules", "BetaGeoModel", "GammaGammaModel", "ParetoNBDModel", "Propensity", "Segmentation",
           "SequenceRules"]
