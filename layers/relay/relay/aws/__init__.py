"""AWS adapters that know no vendor and no flow: S3 notifications, S3 objects, and the transfers table."""
