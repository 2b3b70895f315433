"""The clouds spotwatch watches: one adapter module per cloud (``aws``, ``gcp``,
``azure``) over ``base.Cloud``, listed by name in ``registry``; the metadata
HTTP client and the fault type they share in ``metadata_http``; which cloud
this runs on in ``detect``."""
