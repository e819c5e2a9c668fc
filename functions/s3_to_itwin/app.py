def lambda_handler(e, c): return {}
