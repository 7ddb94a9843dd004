"""Finance apps: fraud detection (`fraud`) and forecasting (`forecast`), one folder each."""
