"""Pieces every capability shares: batching and paging helpers, metrics, the safety rules, runner queue cleanup."""
