"""One module or folder per capability: its rules as plain functions, and the Dagster jobs, assets and schedules around them."""
