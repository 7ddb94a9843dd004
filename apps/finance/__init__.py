"""Finance apps: fraud detection (`fraud`) and forecasting (`forecast`); `tables` is shared."""
