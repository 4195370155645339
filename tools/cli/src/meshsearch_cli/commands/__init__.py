"""The client commands of `meshsearch`: each module is one command group, talking to the api."""
