# /// task
# extends = "clean.base"
# inputs = ["data/sales.csv"]
# outputs = ["out/sales.clean.csv"]
# [params]
# value_column = "amount"
# ///
