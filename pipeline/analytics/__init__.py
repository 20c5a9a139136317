"""What analysts read: daily rollup files, SQL over the results, the HTML page."""
