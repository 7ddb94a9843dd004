"""Data shared by fit and serve, torch-free: tables, splits, image indexing, class weights."""
