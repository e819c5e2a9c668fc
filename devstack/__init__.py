"""Local stack: moto server plus the platform sandbox, provisioned from template.yaml."""
