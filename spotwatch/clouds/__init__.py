"""The clouds spotwatch watches, one adapter module each, over one base::

    clouds/
      base.py           Cloud (the adapter base), CloudSources, SimRequest, Rehearsal
      registry.py       name -> adapter module; the only list of clouds
      aws.py            AwsCloud: IMDS monitors (imds, monitors, maintenance, asg)
      gcp.py            GoogleCloud: the metadata client, its feeds and monitors
      azure.py          AzureCloud: Scheduled Events, their monitors and approver
      metadata_http.py  the HTTP client and the fault type (ImdsError) all share
      detect.py         --cloud auto: each adapter's DMI test, then its probe

Adding a cloud: one module here with a ``Cloud`` subclass as ``ADAPTER``
(name, title, sources, from_dmi, probe, leads, build, serve, drill), its
metadata simulator on ``simserver.SimBase``, and one line in ``registry``.
Nothing else branches on a cloud's name.
"""
