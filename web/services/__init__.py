"""What the pages, the API and the CLI do, by domain: :mod:`~web.services.collections`,
:mod:`~web.services.uploads`, :mod:`~web.services.ground_truth`, :mod:`~web.services.jobs`,
:mod:`~web.services.exports`, :mod:`~web.services.review`, :mod:`~web.services.accounts`.

Services take a SQLAlchemy session and plain values, commit their own writes, and raise the
errors of :mod:`web.services.errors`; they know nothing of requests or HTTP.
"""
