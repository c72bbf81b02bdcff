# a.py
from batchyard import Yard

yard = Yard("sqlite:///leads.db")


@yard.task  # known to this process only, as task a.py:shout
def shout(item, ctx):
    return item["name"].upper()


batch = yard.submit(shout, [{"name": "Acme"}])
yard.run_until_idle()  # run it here: no other worker will
print(batch.status().state, [item.result for item in batch.results()])
