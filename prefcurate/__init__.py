"""prefcurate: consistency-audited DPO preference data. Core library; no Prefect import here."""

__version__ = "0.1.0"
