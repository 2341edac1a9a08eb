"""Did the training take: what the identity check expects, its verdict, and the general answers before and after."""
